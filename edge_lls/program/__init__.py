"""The deployed model: one representation (ir.Program), read by every backend.

    ir.py           Tensor, Operator, Program, Builder: plain data
    lower.py        trained Model -> float32 program (batch norm folded)
    ptq.py          post-training int8 quantization (TFLite's scheme)
    edit.py         splice / subprogram
    interpreter.py  prepare(program) -> Graph: each operator validated and its parameters
                    computed once, run on the TFLite-exact int8 kernels or the fused fast
                    path; load_tflite(path)
    runner.py       Int8Model: a program as a classifier of float images
formats/tflite.py reads and writes programs as .tflite bytes (read_tflite, write_tflite).

This file imports nothing: formats/tflite.py imports program.ir, and a package that
re-exported the interpreter here would import formats/tflite.py back.
"""
