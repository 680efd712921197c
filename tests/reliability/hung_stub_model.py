"""TEST ONLY: a Triton Python-backend model.py that is the real one, except that a marker request hangs it.

The lifecycle test copies the model repository to a temp dir, renames a part's model.py to real_model.py and
puts this file in its place. A request whose first audio sample equals HANG_MARKER makes the stub sleep
inside `execute` forever: the model stays "ready" for Triton while nothing it is sent is ever answered, which
is what a wedged stub looks like from outside. Never shipped: it lives only under tests/.
"""

import importlib.util
import os
import time

from avpenet import contract

HANG_MARKER = 1234.5
INPUT = contract.AUDIO.name  # audio_frontend's clip input


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        path = os.path.join(args["model_repository"], args["model_version"], "real_model.py")
        spec = importlib.util.spec_from_file_location("avpenet_real_model", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.pb_utils = module.pb_utils
        self.real = module.TritonPythonModel()
        self.real.initialize(args)

    def execute(self, requests: list) -> list:
        for request in requests:
            tensor = self.pb_utils.get_input_tensor_by_name(request, INPUT)
            wave = tensor.as_numpy() if tensor is not None else None
            if wave is not None and wave.size and float(wave.flat[0]) == HANG_MARKER:
                while True:  # the deliberate hang
                    time.sleep(3600)
        return self.real.execute(requests)

    def finalize(self) -> None:
        self.real.finalize()
