"""Export of students and teachers to ONNX / OpenVINO model packages, with NNCF INT8."""
