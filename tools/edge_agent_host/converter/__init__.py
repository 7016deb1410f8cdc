"""The converter: ``edge-agent-host convert``, from a training pipeline's float model to a signed
int8 bundle with a report of what int8 cost.

* :mod:`~edge_agent_host.converter.formats`: one module per input format (``aif``, ``onnx``,
  ``tflite``), found by name; the CLI never asks which format it has;
* :mod:`~edge_agent_host.converter.aif`: what Active Inference conversions share (options, reading
  models, measuring int8 against float64 over rollouts, the bundle payload);
* :mod:`~edge_agent_host.converter.neural`: what the neural formats share (inputs and calibration
  data, outputs, quantization with onnxruntime, measuring, the bundle and its device check);
* :mod:`~edge_agent_host.converter.common` (the options every conversion shares and the
  :class:`~edge_agent_host.converter.common.Converter` record), :mod:`~.report` (the report and
  its checks), :mod:`~.output` (writing the bundle), :mod:`~.builders` (small float models built
  in numpy, for examples, tests and benchmarks).

Imports run one way: ``formats`` -> ``aif`` / ``neural`` -> ``common``, ``report``, ``output``.
"""
