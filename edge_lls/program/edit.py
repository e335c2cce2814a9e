"""Programs cut and joined: a program's prefix followed by another program (a fine-tuned
tail on a frozen backbone), and a run of a program's operators as a program of its own."""
from __future__ import annotations

import dataclasses

from ..errors import ConfigError
from .ir import Program


def splice(base: Program, cut_op: int, tail: Program, *, name: str | None = None,
           description: str = "", metadata: dict | None = None) -> Program:
    """base's operators [0, cut_op) followed by tail, whose single input is base's tensor
    feeding op cut_op (operand 0); unused base tensors are dropped.  The tail's input must
    carry the same type and quantization as that tensor."""
    if cut_op < len(base.operators):
        cut_tensor = base.operators[cut_op].inputs[0]
    else:
        cut_tensor = base.outputs[0]
    (tail_input,) = tail.inputs
    a, t = base.tensors[cut_tensor], tail.tensors[tail_input]
    if a.dtype != t.dtype or a.scales is None and t.scales is not None or (
            a.scales is not None and (t.scales is None or a.scale != t.scale or a.zero_point != t.zero_point)):
        raise ConfigError(f"splice: tail input '{t.name}' does not match '{a.name}' (type or quantization)")
    kept_ops = base.operators[:cut_op]
    used = list(dict.fromkeys([*base.inputs, *(i for op in kept_ops for i in (*op.inputs, *op.outputs) if i >= 0),
                               cut_tensor]))
    mapping = {old: new for new, old in enumerate(used)}
    tensors = [dataclasses.replace(base.tensors[old], index=new) for new, old in enumerate(used)]
    tail_mapping = {tail_input: mapping[cut_tensor]}
    for t in tail.tensors:
        if t.index != tail_input:
            tail_mapping[t.index] = len(tensors)
            tensors.append(dataclasses.replace(t, index=len(tensors)))
    operators = [dataclasses.replace(op, index=i, inputs=tuple(mapping.get(x, -1) if x >= 0 else -1 for x in op.inputs),
                                     outputs=tuple(mapping[x] for x in op.outputs)) for i, op in enumerate(kept_ops)]
    for op in tail.operators:
        operators.append(dataclasses.replace(op, index=len(operators), options=dict(op.options),
                                             inputs=tuple(tail_mapping[x] if x >= 0 else -1 for x in op.inputs),
                                             outputs=tuple(tail_mapping[x] for x in op.outputs)))
    return Program(tensors, operators, tuple(mapping[i] for i in base.inputs),
                   tuple(tail_mapping[i] for i in tail.outputs), name=name or base.name, description=description,
                   metadata=dict(metadata or {}))


def subprogram(program: Program, start_op: int, end_op: int | None = None) -> Program:
    """Operators [start_op, end_op) as a program whose input is operand 0 of start_op and
    whose output is the output of the last operator."""
    end_op = len(program.operators) if end_op is None else end_op
    ops = program.operators[start_op:end_op]
    first = ops[0].inputs[0]
    used = list(dict.fromkeys([first, *(i for op in ops for i in (*op.inputs, *op.outputs) if i >= 0)]))
    mapping = {old: new for new, old in enumerate(used)}
    tensors = [dataclasses.replace(program.tensors[old], index=new) for new, old in enumerate(used)]
    operators = [dataclasses.replace(op, index=i, inputs=tuple(mapping[x] if x >= 0 else -1 for x in op.inputs),
                                     outputs=tuple(mapping[x] for x in op.outputs)) for i, op in enumerate(ops)]
    return Program(tensors, operators, (mapping[first],), (mapping[ops[-1].outputs[0]],), name=program.name)
