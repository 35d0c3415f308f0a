"""The edge side: needs only ai_edge_litert, numpy and pillow."""
