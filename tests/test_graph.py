"""nn.to_dot and nn.draw_graph: the DOT text holds exactly the graph's nodes and edges; without
Graphviz, draw_graph writes the .dot file and says how to render it."""
import os
import re
import shutil
import stat

import numpy as np
import pytest

import nn


class Scaler(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(np.full(2, 3.0))


def parse_dot(text):
    """({node: label}, [(from, to)]) from to_dot's text."""
    labels = dict(re.findall(r'^  (\w+) \[label="([^"]*)"', text, re.M))
    edges = re.findall(r"^  (\w+) -> (\w+);", text, re.M)
    return labels, edges


def functions_of(labels, edges):
    """Each Function node as (its name, its input labels in order, its output labels)."""
    return sorted((labels[f], [labels[a] for a, b in edges if b == f],
                   [labels[b] for a, b in edges if a == f])
                  for f in labels if f.startswith("f"))


def small_graph():
    """y = x * x (x used twice); loss = sum(y * scale), scale a parameter of a module."""
    model = Scaler()
    x = nn.Tensor(np.ones((3, 2)), requires_grad=True)
    y = x * x
    z = y * model.scale
    return model, x, y, z, z.sum()


def test_to_dot_has_exactly_the_nodes_and_edges():
    model, x, y, z, loss = small_graph()
    text = nn.to_dot(loss, module=model, names={x: "x", y: "y", z: "z", loss: "loss"})
    labels, edges = parse_dot(text)
    tensors = sorted(label for node, label in labels.items() if node.startswith("t"))
    assert tensors == ["loss\\nscalar float64", "scale\\n2 float64", "x\\n3x2 float64",
                       "y\\n3x2 float64", "z\\n3x2 float64"]
    assert functions_of(labels, edges) == [
        ("Mul", ["x\\n3x2 float64", "x\\n3x2 float64"], ["y\\n3x2 float64"]),   # two edges from x
        ("Mul", ["y\\n3x2 float64", "scale\\n2 float64"], ["z\\n3x2 float64"]),
        ("Sum", ["z\\n3x2 float64"], ["loss\\nscalar float64"])]
    assert len(labels) == 5 + 3 and len(edges) == (2 + 1) + (2 + 1) + (1 + 1)   # in + out
    assert text.startswith("digraph G {") and text.rstrip().endswith("}")
    plain = nn.to_dot(loss)                                      # no module, no names
    assert "scale" not in plain and "x\\n" not in plain
    assert re.search(r'label="scalar float64", shape=ellipse, style=bold', plain)   # the result
    assert re.search(r'label="2 float64", shape=ellipse, style=filled', plain)     # a parameter


def test_to_dot_after_create_graph_shows_the_backward_functions():
    x = nn.Tensor(np.ones(3), requires_grad=True)
    gx, = nn.grad((x.exp()).sum(), [x], create_graph=True)
    labels, _ = parse_dot(nn.to_dot(gx))
    functions = sorted(label for label in labels.values() if "float" not in label)
    assert functions == ["Exp", "Mul"]       # exp(x), and gy * exp(x) made by Exp.backward


def test_to_dot_of_a_leaf_is_one_node():
    labels, edges = parse_dot(nn.to_dot(nn.Tensor(np.zeros((2, 2), np.float32))))
    assert list(labels.values()) == ["2x2 float32"] and not edges


def test_draw_graph_without_graphviz_writes_the_dot_file_and_says_so(tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    model, _, _, _, loss = small_graph()
    written = nn.draw_graph(loss, tmp_path / "graph.png", module=model)
    assert written == tmp_path / "graph.dot"
    assert written.read_text() == nn.to_dot(loss, module=model)
    assert not (tmp_path / "graph.png").exists()
    message = capsys.readouterr().err
    assert "Graphviz" in message and "not found" in message
    assert f"dot -Tpng {tmp_path / 'graph.dot'} -o {tmp_path / 'graph.png'}" in message


def test_draw_graph_runs_dot_when_there_is_one(tmp_path, monkeypatch):
    """A stand-in `dot` on PATH records how it was called (so this runs without Graphviz)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"
    fake.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/called"\ncp "$2" "$4"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ["PATH"])
    loss = small_graph()[-1]
    written = nn.draw_graph(loss, tmp_path / "g.svg")
    assert written == tmp_path / "g.svg"
    assert (bin_dir / "called").read_text().split() == [
        "-Tsvg", str(tmp_path / "g.dot"), "-o", str(tmp_path / "g.svg")]
    assert written.read_text() == nn.to_dot(loss)


def test_draw_graph_with_graphviz_makes_a_png(tmp_path):
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")
    loss = small_graph()[-1]
    written = nn.draw_graph(loss, tmp_path / "g.png")
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
