"""MaskDistill (Van Gansbeke et al.): attention-affinity object masks -> masked-CLS clusters ->
Mask R-CNN -> confident candidate bank -> DeepLab-v3 trained with hard-pixel cross-entropy."""
