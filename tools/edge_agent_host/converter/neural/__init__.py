"""What the neural formats (ONNX, TFLite) share: the options (:mod:`.options`) and their command
line (:mod:`.args`), input shapes and calibration data (:mod:`.inputs`), the outputs a bundle keeps
(:mod:`.outputs`), int8 quantization with onnxruntime (:mod:`.onnx_quantize`) and what the report
says of the calibration method (:mod:`.calibration_advice`), float against int8 on held-out data
(:mod:`.measure`), and the bundle, loaded and stepped as a device does before it is signed
(:mod:`.bundle`, :mod:`.device_check`)."""
