"""A picture of the graph: Graphviz DOT text of the Functions and Tensors behind a result.

    print(nn.to_dot(loss, module=D))         # DOT text: paste it into any Graphviz viewer
    nn.draw_graph(loss, "graph.png", module=D)

Ellipses are Tensors, labelled with their shape and dtype (and their name: a parameter's name in
`module`, or one given in `names`); boxes are Functions. Edges follow the forward computation:
input -> Function -> output. Leaves that require a gradient (parameters, an input you
differentiate) are shaded, constants are dashed, the result is bold. The graph is what
tensor.topological_order walks in backward(); after nn.grad(..., create_graph=True) the Functions
that the backward pass ran are part of it too (a Conv2d's input gradient is a ConvTranspose2d).
"""
import shutil
import subprocess
import sys
from pathlib import Path

from .tensor import topological_order


def to_dot(tensor, module=None, names=None):
    """DOT text of the graph that produced `tensor`. module: a Module whose parameters are named
    in the picture; names: {Tensor: label} for other tensors (e.g. {x: "x"})."""
    labels = {id(p): name for name, p in module.named_parameters()} if module is not None else {}
    labels.update({id(t): label for t, label in (names or {}).items()})
    ids = {}   # id(Tensor or Function) -> DOT node name

    def node(thing, prefix):
        if id(thing) not in ids:
            ids[id(thing)] = f"{prefix}{len(ids)}"
        return ids[id(thing)]

    def tensor_line(t):
        text = f"{'x'.join(map(str, t.shape)) or 'scalar'} {t.dtype}"
        text = f"{labels[id(t)]}\\n{text}" if id(t) in labels else text
        style = ("style=bold" if t is tensor else "style=filled, fillcolor=lightgrey"
                 if t.is_leaf and t.requires_grad else "style=dashed" if t.is_leaf else "")
        return f'  {node(t, "t")} [label="{text}", shape=ellipse{", " + style if style else ""}];'

    lines, edges, seen = [], [], set()
    for function in reversed(topological_order([tensor])):          # producers first
        name = node(function, "f")
        lines.append(f'  {name} [label="{type(function).__name__.lstrip("_")}", shape=box];')
        outputs = [ref() for ref in function._outputs]
        for t in function.inputs + [y for y in outputs if y is not None]:
            if id(t) not in seen:
                seen.add(id(t))
                lines.append(tensor_line(t))
        edges += [f"  {node(x, 't')} -> {name};" for x in function.inputs]
        edges += [f"  {name} -> {node(y, 't')};" for y in outputs if y is not None]
    if not seen:                                                     # a leaf: no Functions
        lines.append(tensor_line(tensor))
    header = ["digraph G {", "  graph [ranksep=0.3, nodesep=0.3];",
              '  node [fontname="Helvetica", fontsize=10, height=0.3];']
    return "\n".join(header + lines + edges + ["}"]) + "\n"


def draw_graph(tensor, path, module=None, names=None):
    """Render to_dot(tensor, module, names) to `path` (.png, .svg, .pdf) with Graphviz's `dot`,
    next to the .dot file it comes from. Without Graphviz only the .dot file is written, and a
    message says how to render it. Returns the path of the picture, or of the .dot file."""
    path = Path(path)
    dot_file = path.with_suffix(".dot")
    dot_file.write_text(to_dot(tensor, module, names))
    dot = shutil.which("dot")
    if dot is None:
        print(f"Graphviz's `dot` program was not found, so only the graph's DOT text was written, "
              f"to {dot_file}. Install Graphviz (e.g. `apt-get install graphviz`, `brew install "
              f"graphviz` or `conda install graphviz`) and run\n"
              f"    dot -T{path.suffix.lstrip('.') or 'png'} {dot_file} -o {path}\n"
              f"or paste the file into any online Graphviz viewer.", file=sys.stderr)
        return dot_file
    subprocess.run([dot, f"-T{path.suffix.lstrip('.')}", str(dot_file), "-o", str(path)],
                   check=True)
    return path
