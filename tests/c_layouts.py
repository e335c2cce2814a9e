"""One check, three headers: a C program that prints every struct's size and field offsets
(and named constants) of a firmware header, beside the lines Python's `struct` layouts
predict. Used by test_c_export (el_model_format.h), test_protocol (el_protocol.h) and
test_messages (el_messages.h): one Python layout and one C header, tested against each other."""
from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import C_STRICT as STRICT, FIRMWARE


def compile_host(gcc, out: Path, *sources, flags=(), includes=()) -> Path:
    """The host build of firmware sources, strict flags, no diagnostics allowed."""
    cmd = [gcc, *STRICT, *flags, f"-I{FIRMWARE / 'include'}", *(f"-I{i}" for i in includes), "-o", str(out),
           *map(str, sources)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return out


def layout_lines(header: str, layouts, numbers=(), extra_c=(), extra_expected=()) -> tuple[list[str], list[str]]:
    """(C source lines, the lines it must print). numbers: (C expression, value); a name is
    printed up to its first '(' (a macro call prints as the macro's name)."""
    source = ['#include <stddef.h>', '#include <stdio.h>', f'#include "{header}"', 'int main(void) {']
    expected = []
    for layout in layouts:
        source.append(f'    printf("{layout.name} %zu\\n", sizeof({layout.name}));')
        expected.append(f"{layout.name} {layout.size}")
        for name, _ in layout.fields:
            source.append(f'    printf("{layout.name}.{name} %zu\\n", offsetof({layout.name}, {name}));')
        expected += [f"{layout.name}.{name} {offset}" for name, offset in layout.offsets().items()]
    for expression, value in numbers:
        label = expression.split("(")[0]
        source.append(f'    printf("{label} %lu\\n", (unsigned long)({expression}));')
        expected.append(f"{label} {value}")
    source += [*extra_c, '    return 0;', '}']
    return source, [*expected, *extra_expected]


def printed_layouts(gcc, tmp_path: Path, header: str, layouts, numbers=(), extra_c=(), extra_expected=(),
                    sources=(), includes=()) -> tuple[list[str], list[str]]:
    """Build and run layout_lines' program: (what it printed, what Python expects)."""
    source, expected = layout_lines(header, layouts, numbers, extra_c, extra_expected)
    (tmp_path / "layout.c").write_text("\n".join(source) + "\n")
    tool = compile_host(gcc, tmp_path / "layout", tmp_path / "layout.c", *sources, includes=includes)
    printed = subprocess.run([str(tool)], capture_output=True, text=True, check=True).stdout.splitlines()
    return printed, expected


def compile_time_checks(header: str, layouts) -> list[str]:
    """C lines that fail to compile unless every struct of `header` has Python's size and
    offsets: for a cross compiler, whose programs cannot run here."""
    lines = ['#include <stddef.h>', f'#include "{header}"']
    for layout in layouts:
        lines.append(f"typedef char check_{layout.name}[sizeof({layout.name}) == {layout.size} ? 1 : -1];")
        for name, offset in layout.offsets().items():
            lines.append(f"typedef char check_{layout.name}_{name}"
                         f"[offsetof({layout.name}, {name}) == {offset} ? 1 : -1];")
    return lines

