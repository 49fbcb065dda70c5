"""distill/bench.py's arms and KD-vs-CE comparison (the runs themselves are real distill runs: a measurement, not
a test; distill/run.py is tested in test_distill_run.py)."""

import pytest

from distill.bench import kd_vs_ce, markdown, parse_arm, split_top_level


def test_arm_specs():
    assert parse_arm("kd=alpha=0.5,kd_positions=all") == ("kd", ["distill.alpha=0.5", "distill.kd_positions=all"])
    assert parse_arm("wide=student.keep_layers=[0, 3],data.train_samples=session,train.lr=1") == (
        "wide", ["distill.student.keep_layers=[0, 3]", "data.train_samples=session", "train.lr=1"])
    assert parse_arm("base=") == ("base", [])
    assert split_top_level("a=[1, 2],b='x,y',c={d: 1, e: 2}") == ["a=[1, 2]", "b='x,y'", "c={d: 1, e: 2}"]
    for bad in ("noequals", "=alpha=1", "bad name=alpha=1", "kd=alpha"):
        with pytest.raises(SystemExit):
            parse_arm(bad)


def _row(alpha, ppl, layers=10, steps=100, mode="reply", bridge="none", bridge_layers="gaps"):
    return {"overrides": [f"distill.alpha={alpha}"], "shared_overrides": [], "wall_s": 1.0,
            "student": {"keep_layers": None, "num_hidden_layers": layers, "hidden_size": 576,
                        "intermediate_size": 1536, "num_attention_heads": None, "num_key_value_heads": None,
                        "layer_selection": "angular", "width_selection": None, "bridge": bridge,
                        "bridge_layers": bridge_layers},
            "objective": {"alpha": alpha}, "steps": steps, "train_samples": mode, "label_tokens_seen": 1,
            "tokens_seen": 1, "student_num_parameters": 60e6, "teacher_num_parameters": 130e6, "params_ratio": 0.46,
            "teacher_val_ppl": 35.8, "student_start_val_ppl": 1e4, "student_val_ppl": ppl,
            "quality_retained": 35.8 / ppl, "teacher_decode_tokens_per_s": 50.0,
            "student_decode_tokens_per_s": 100.0, "decode_speedup": 2.0}


def test_kd_is_compared_with_the_ce_only_arm_of_the_same_shape_steps_and_data():
    results = {"kd": _row(0.5, 80.0), "kd20": _row(0.5, 50.0, layers=20), "ce": _row(0.0, 100.0),
               "kd_long": _row(0.5, 60.0, steps=200), "kd_sessions": _row(0.5, 70.0, mode="session"),
               "kd_bridged": _row(0.5, 65.0, bridge="linear"),
               "kd_bridged_all": _row(0.5, 60.0, bridge="linear", bridge_layers="all")}
    c = kd_vs_ce(results)
    assert [(x["kd"], x["ce_only"]) for x in c] == [("kd", "ce")]
    assert c[0]["kd_lower_by"] == pytest.approx(0.2) and c[0]["met"]
    md = markdown(results, c, "python distill/bench.py")
    assert "KD vs CE-only: kd val ppl 80.00 vs ce 100.00: KD 20.0% lower (goal >= 10%: met)" in md
    assert "| kd_bridged | distill.alpha=0.5 | 10 | 576/1536/-/- | angular, linear bridges |" in md
    assert "| kd_bridged_all | distill.alpha=0.5 | 10 | 576/1536/-/- | angular, linear bridges on all layers |" in md
    assert sum(line.startswith("|") for line in md.splitlines()) == 2 + len(results)  # header, separator, arms
    assert "no CE-only arm" in markdown({"kd": _row(0.5, 80.0)}, [], "cmd")


def _student_manifest(teacher_hash):
    return {"parents": {"teacher": {"content_hash": teacher_hash}}, "command": ["distill/run.py"],
            "config": {"data": {"train_samples": "reply"},
                       "distill": {"student": {"num_attention_heads": None, "num_key_value_heads": None,
                                               "keep_layers": None, "layer_selection": "influence"}}},
            "metrics": {"steps": 16, "label_tokens_seen": 5, "tokens_seen": 50, "wall_seconds": 812.5},
            "distillation": {"objective": {"alpha": 0.5}, "student_num_parameters": 85e6,
                             "teacher_num_parameters": 134e6, "params_ratio": 0.632, "teacher_val_ppl": 35.8,
                             "student_start_val_ppl": 380.0, "student_val_ppl": 94.9, "quality_retained": 0.377,
                             "teacher_decode_tokens_per_s": 27.0, "student_decode_tokens_per_s": 46.5,
                             "decode_speedup": 1.72,
                             "student": {"num_hidden_layers": 16, "hidden_size": 576, "intermediate_size": 1536,
                                         "keep_layers": [0, 1], "layer_selection": {"method": "influence"}}}}


def test_an_existing_student_of_the_same_teacher_is_an_arm(tmp_path):
    import json
    from types import SimpleNamespace

    from distill.bench import existing_arm

    teacher, student = tmp_path / "teacher", tmp_path / "student"
    teacher.mkdir()
    student.mkdir()
    (teacher / "manifest.json").write_text(json.dumps({"content_hash": "abc"}))
    (student / "manifest.json").write_text(json.dumps(_student_manifest("abc")))
    args = SimpleNamespace(teacher=teacher)
    name, row = existing_arm(args, f"demo={student}")
    assert name == "demo" and row["student_val_ppl"] == 94.9 and row["wall_s"] == 812.5
    assert row["student"]["layer_selection"] == "influence" and row["steps"] == 16
    (student / "manifest.json").write_text(json.dumps(_student_manifest("other")))
    with pytest.raises(SystemExit, match="another teacher"):
        existing_arm(args, f"demo={student}")
    with pytest.raises(SystemExit, match="expected NAME=PATH"):
        existing_arm(args, f"demo={tmp_path / 'missing'}")
