"""Step schedules (alpha window, MIS split) and the automatic modality configuration."""
import pytest
import torch

from instancediffusion_core.model.drop_config import auto_drop_config, resolve_drop_config
from instancediffusion_core.sampling.schedule import (fraction_to_step, grounding_scale, grounding_window, mis_steps,
                                             step_index)


def test_fraction_truncates_like_the_official_code():
    assert fraction_to_step(0.75, 50) == 37
    assert fraction_to_step(0.8, 50) == 40
    assert mis_steps(50, 0.36) == 18 and mis_steps(50, 0.2) == 10 and mis_steps(50, 0.3) == 15
    with pytest.raises(ValueError):
        fraction_to_step(1.5, 10)


def test_window_and_order():
    assert grounding_window(20, 0.0, 0.8) == (0, 16)
    with pytest.raises(ValueError, match="must not be before"):
        grounding_window(20, 0.6, 0.5)


def test_step_index_from_sigmas_including_intermediate_evaluations():
    sched = torch.tensor([14.6, 8.0, 4.0, 2.0, 1.0, 0.0])
    assert [step_index(float(s), sched) for s in sched[:-1]] == [0, 1, 2, 3, 4]
    assert step_index(6.0, sched) == 1          # Heun's second evaluation inside step 1
    assert step_index(20.0, sched) == 0         # above the schedule
    assert step_index(0.5, sched) == 4          # inside the last step
    assert step_index(8.0 * (1 + 1e-6), sched) == 1   # float noise on the sigma


def test_grounding_scale_follows_the_window():
    sched = [10.0, 8.0, 6.0, 4.0, 2.0, 0.0]     # 5 steps, end 0.6 -> steps 0, 1, 2
    scales = [grounding_scale(s, sched, 0.0, 0.6, 1.0) for s in sched[:-1]]
    assert scales == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert grounding_scale(10.0, sched, 0.0, 1.0, 0.0) == 0.0
    assert [grounding_scale(s, sched, 0.4, 1.0, 0.5) for s in sched[:-1]] == [0.0, 0.0, 0.5, 0.5, 0.5]


@pytest.mark.parametrize("mods, expected", [
    ([{"box"}, {"box", "point"}], "box"),
    ([{"point"}, {"point"}], "point"),
    ([{"point"}, {"box"}], "box"),
    ([{"box", "mask"}, {"box"}], "mask"),
    ([{"box"}, {"scribble"}, {"mask"}], "scribble"),
    ([], "box"),
])
def test_auto_modality_configuration(mods, expected):
    assert auto_drop_config(mods) == expected


def test_explicit_configuration_and_unknown_name():
    assert resolve_drop_config("point", [{"box"}]) == "point"
    with pytest.raises(ValueError, match="unknown modality configuration 'boxes'"):
        resolve_drop_config("boxes", [])
