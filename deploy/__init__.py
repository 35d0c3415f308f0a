"""Export to TF-Lite and the edge runtime.

`deploy.edge` imports only ai_edge_litert, numpy and pillow, so it runs on a device without TensorFlow;
`deploy.tflite` holds the converters and needs TensorFlow.
"""

import models  # noqa: F401  (picks the project's one Keras before TensorFlow loads)
