"""What a notebook stores, executed in a real Jupyter kernel (as `make notebooks` does).

A stored notebook is read without a kernel: its progress bars must read finished and
each interactive figure or animation must have an image beside it.
"""

import base64

import nbformat
import pytest
from nbclient import NotebookClient

CELLS = [
    # a progress bar that advances in many updates
    """from course_lib.progress import progress_bar
with progress_bar(total=40, desc="training") as bar:
    for step in range(40):
        bar.update(1, loss=f"{1 / (step + 1):.3f}")""",
    # an interactive figure: live widget + PNG of the first state in one output
    """import matplotlib.pyplot as plt, ipywidgets as widgets
from course_lib.viz import interactive_figure
def draw(temperature):
    fig, ax = plt.subplots(figsize=(3, 2), dpi=60)
    ax.bar(range(5), [temperature * i for i in range(5)])
    print("drawn at", temperature)
    return fig
interactive_figure(draw, {"temperature": widgets.FloatSlider(value=0.8, min=0.1, max=2.0, description="temperature")})""",
    # an animation
    """from types import SimpleNamespace
import torch
from course_lib.viz import trajectory_animation
x = torch.linspace(-1, 1, 12)[:, None, None, None, None].expand(12, 2, 1, 4, 4)
trajectory_animation(SimpleNamespace(x_t=x, x0_pred=-x, timesteps=list(range(11, -1, -1))), max_frames=6)""",
]


@pytest.fixture(scope="module")
def executed():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    return nb


def test_progress_bar_is_stored_finished(executed):
    outputs = executed.cells[0].outputs
    assert len(outputs) == 1, "one output, updated in place (not one per update)"
    text = outputs[0]["data"]["text/plain"]
    assert text.startswith("training: 100% 40/40 [") and text.endswith("loss=0.025"), text
    assert 'value="40" max="40"' in outputs[0]["data"]["text/html"]


def test_interactive_figure_is_stored_with_its_image_and_widget_state(executed):
    (out,) = [o for o in executed.cells[1].outputs if o["output_type"] != "stream"]
    data = out["data"]
    assert base64.b64decode(data["image/png"])[:4] == b"\x89PNG"
    model_id = data["application/vnd.jupyter.widget-view+json"]["model_id"]
    state = executed.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert model_id in state  # the saved notebook can rebuild the widget
    outputs = [o for m in state.values() if m["model_name"] == "OutputModel" for o in m["state"]["outputs"]]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the live figure, inside the Output widget
    assert any("drawn at 0.8" in o.get("text", "") for o in outputs)


def test_animation_is_stored_as_a_gif(executed):
    (out,) = executed.cells[2].outputs
    assert set(out["data"]) == {"image/gif", "text/plain"}
    assert base64.b64decode(out["data"]["image/gif"])[:6] == b"GIF89a"
