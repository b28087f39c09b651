"""motivnet-edge runtime: facial emotion recognition from a model package, without torch.

    from motivnet_edge import EmotionRecognizer
    with EmotionRecognizer.from_pretrained() as rec:
        for face in rec.predict("photo.jpg"):
            print(face.box, face.label, face.confidence)
"""

from .detectors import Detection, create_detector
from .errors import BackendUnavailableError, InvalidImageError, LabelError, MotivnetError, PackageError
from .labels import FER2013_LABELS, MOTIVNET_LABELS
from .package import ModelPackage, load_package
from .preprocess import Preprocessing, face_crop, to_tensor
from .recognizer import EmotionRecognizer, FacePrediction, RecognizerOptions

__version__ = "0.1.0"

__all__ = [
    "EmotionRecognizer", "RecognizerOptions", "FacePrediction", "Detection", "create_detector",
    "ModelPackage", "load_package", "Preprocessing", "face_crop", "to_tensor",
    "MotivnetError", "InvalidImageError", "PackageError", "BackendUnavailableError", "LabelError",
    "MOTIVNET_LABELS", "FER2013_LABELS", "__version__",
]
