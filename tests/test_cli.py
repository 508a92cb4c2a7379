"""The command line as a new user meets it (issue 15, item 5): errors name the flag as typed;
a one-point grid runs and reports its slope as not computable; unwritable outputs and sizes
beyond the machine's memory are refused before any work with one ``error:`` line; every
command's ``--help`` ends with an example; exit status 2 for bad arguments, 1 for a failure
during a run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gated_hmoe import checks, cli
from gated_hmoe.experiments import e1_profile, e1_rates, e2_attention, e2_profile
from gated_hmoe.experiments import e4_transformer as e4
from gated_hmoe.experiments import e5_teacher_student as e5

ROOT = Path(__file__).resolve().parents[1]
TINY_RATES = ["rates", "--n-min", "100", "--n-max", "200", "--points", "2", "--replicates", "2",
              "--max-iter", "20", "--no-progress"]


def run(argv, capsys):
    """``cli.main(argv)`` -> ``(status, stdout, stderr lines)``."""
    capsys.readouterr()
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err.strip().splitlines()


def one_error(err, start="error: "):
    assert len(err) == 1 and err[0].startswith(start), err
    return err[0]


@pytest.fixture
def no_run(monkeypatch):
    """Every experiment's run replaced by a failure: a refused command never reaches it."""
    def boom(*args, **kwargs):
        raise AssertionError("the run was reached")
    for module, name in ((e1_rates, "run_sweep"), (e1_profile, "run_profiles"),
                         (e2_profile, "run_profiles"), (e2_attention, "run_sweep"),
                         (e4, "run_experiment"), (e5, "run")):
        monkeypatch.setattr(module, name, boom)


# ------------------------------------------------------------------ flags as typed

@pytest.mark.parametrize("argv, flags", [
    (["rates", "--n-min", "5000", "--n-max", "100"], ("--n-max", "--n-min")),
    (["rates", "--k-fit", "1"], ("--k-fit", "--k-true")),
    (["rates", "--fit-min", "1e30"], ("--fit-min", "--fit-max")),
    (["profile", "--k-fit", "5"], ("--k-fit", "--k-true")),
    (["attention-profile", "--tokens", "2"], ("--tokens",)),
    (["attention-fit", "--log10-x-min", "9", "--log10-x-max", "8"],
     ("--log10-x-min", "--log10-x-max")),
    (["attention-fit", "--positions", "MHSA,G7"], ("--positions",)),
])
def test_errors_name_the_flags_as_typed(argv, flags, tmp_path, capsys, no_run):
    status, _, err = run(argv + ["--out", str(tmp_path / "o")], capsys)
    line = one_error(err)
    assert status == 2
    for flag in flags:
        assert flag in line, line
    for field in ("n_min", "n_max", "k_fit", "k_true", "fit_min", "n_tokens", "log10_x"):
        assert field not in line, line
    assert not (tmp_path / "o").exists()


def test_flag_names_come_from_the_parser():
    parsers = cli.sub_parsers(cli.build_parser())
    assert cli.flag_names(parsers["attention-profile"])["n_tokens"] == "--tokens"
    assert cli.flag_names(parsers["rates"])["n_min"] == "--n-min"
    assert cli.flag_names(parsers["transformer"])["d_model"] == "--d-model"


def test_argparse_errors_are_one_line(tmp_path, capsys):
    status, _, err = run(["rates", "--replicates", "abc", "--out", str(tmp_path)], capsys)
    assert status == 2 and "--replicates" in one_error(err)
    status, _, err = run(["rates"], capsys)                       # --out is required
    assert status == 2 and "--out" in one_error(err)
    status, _, err = run(["no-such-command"], capsys)
    assert status == 2 and one_error(err)


# ------------------------------------------------------------------ a one-point grid

def test_one_point_grid_runs_and_reports_no_slope(tmp_path, capsys):
    argv = ["rates", "--n-min", "200", "--points", "1", "--replicates", "2", "--max-iter", "20",
            "--no-progress", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o")]
    status, out, err = run(argv, capsys)
    assert status == 0, err
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["grid"]["n"] == [200]
    assert res["slopes"] and all(s is None for s in res["slopes"].values())
    assert res["slope_note"].startswith("no slope can be fitted")
    assert "no slope can be fitted" in out
    assert (tmp_path / "o" / "rates.png").stat().st_size > 0


def test_one_point_profile_runs_and_reports_no_slope(tmp_path, capsys):
    argv = ["profile", "--n-min", "100", "--points", "1", "--replicates", "1",
            "--offsets", "0.1,1,2", "--max-iter", "3", "--no-progress",
            "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o")]
    status, out, err = run(argv, capsys)
    assert status == 0, err
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["slopes"]["radius"] is None and "no slope can be fitted" in res["slope_note"]
    assert "no slope can be fitted" in out
    assert (tmp_path / "o" / "profile.png").stat().st_size > 0


def test_profile_results_are_strict_json_when_nothing_is_certified(tmp_path, capsys):
    """A budget of one iteration certifies no fit: every radius is undetermined and the
    radius slope cannot be fitted; results.json still parses as strict JSON (null, not NaN)."""
    argv = ["profile", "--n-min", "100", "--n-max", "200", "--points", "2", "--replicates", "1",
            "--offsets", "0.1,1,2", "--max-iter", "1", "--no-progress",
            "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o")]
    status, _, err = run(argv, capsys)
    assert status == 0, err

    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name} in results.json")

    res = json.loads((tmp_path / "o" / "results.json").read_text(), parse_constant=refuse)
    assert res["certified"] < res["fits"]
    assert all(r is None for p in res["points"] for r in p["radius"])


def test_library_keeps_refusing_an_explicit_range_without_two_points():
    assert e1_rates.SweepConfig(points=1).validate().slope_note() is not None
    assert e1_rates.SweepConfig(points=2).validate().slope_note() is None
    with pytest.raises(ValueError, match="slope range"):
        e1_rates.SweepConfig(points=1, fit_min=1.0).validate()
    with pytest.raises(ValueError, match="slope range"):
        e1_rates.SweepConfig(fit_max=1.0).validate()
    noise = e1_rates.SweepConfig(sweep="noise", n=100, noise_min=1e-8, noise_max=1e-4, points=4)
    assert "0 of the grid's 4" in noise.validate().slope_note()    # the default range: runs
    with pytest.raises(ValueError, match="points must be <= 10000"):
        e1_rates.SweepConfig(points=10**8).validate()


# ------------------------------------------------------------------ refused before any work

def test_out_under_a_regular_file_is_refused(tmp_path, capsys, no_run):
    (tmp_path / "file").write_text("")
    for flag in ("--out", "--cache-dir"):
        paths = {"--out": str(tmp_path / "o"), "--cache-dir": str(tmp_path / "c")}
        paths[flag] = str(tmp_path / "file" / "sub")
        status, _, err = run(TINY_RATES + [x for kv in paths.items() for x in kv], capsys)
        line = one_error(err, f"error: {flag} ")
        assert status == 2 and "is not a folder" in line, line
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_read_only_out_is_refused(tmp_path, capsys, no_run):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        status, _, err = run(TINY_RATES + ["--out", str(ro / "o"), "--cache-dir",
                                           str(tmp_path / "c")], capsys)
    finally:
        ro.chmod(0o755)
    assert status == 2 and "is not writable" in one_error(err, "error: --out ")


def test_read_only_folder_check_as_any_user(tmp_path, monkeypatch):
    """The check that the root case cannot exercise: a folder without write permission."""
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(ValueError, match="out must be a folder that can be written.*not writable"):
        checks.writable_folder(tmp_path / "o", "out")


@pytest.mark.parametrize("argv, first", [
    (["rates", "--replicates", "100000000"], "--replicates 100000000 with --n-max 100000 "),
    (["profile", "--replicates", "100000000"], "--replicates 100000000 with --n-max 100000 "),
    (["attention-profile", "--sweep", "noise", "--n", "10000000"], "--replicates 8 with --n "),
    (["attention-fit", "--replicates", "100000000"], "--replicates 100000000 with --n 1000 "),
    (["transformer", "--d-model", "100000", "--seeds", "50"],
     "--preset chapter with --seeds 50, --d-model 100000 "),
])
def test_sizes_beyond_the_machine_are_refused(argv, first, tmp_path, capsys, no_run):
    status, _, err = run(argv + ["--out", str(tmp_path / "o")], capsys)
    line = one_error(err, "error: " + first)
    assert status == 2 and "GiB of memory, the machine has" in line, line
    assert not (tmp_path / "o").exists()


def test_memory_estimates_grow_with_the_sizes_and_admit_the_defaults():
    small, big = e1_rates.SweepConfig(), e1_rates.SweepConfig(replicates=40)
    assert e1_rates.peak_bytes(small) < e1_rates.peak_bytes(big)
    assert e1_rates.peak_bytes(small) < 4 * 2**30           # the defaults run on a laptop
    assert e1_profile.peak_bytes(e1_profile.ProfileConfig()) < 4 * 2**30
    assert e2_profile.peak_bytes(e2_profile.AttentionProfileConfig()) < 4 * 2**30
    assert e2_attention.peak_bytes(e2_attention.FitSweepConfig()) < 4 * 2**30
    for preset in ("tiny", "chapter"):
        assert e4.peak_bytes(e4.PRESETS[preset]) < 4 * 2**30
    assert e4.peak_bytes(e4.PRESETS["chapter"]) < e4.peak_bytes(
        e4.PRESETS["chapter"]._replace(d_model=64))
    with pytest.raises(ValueError, match="replicates 9 would need about 3 GiB"):
        checks.fits_in_memory(3 * 2**30, "replicates 9", available=2**30)


def test_too_many_devices_is_a_bad_argument(tmp_path, capsys, no_run):
    status, _, err = run(TINY_RATES + ["--devices", "100000", "--out", str(tmp_path / "o")],
                         capsys)
    assert status == 2 and "--devices" in one_error(err)


# ------------------------------------------------------------------ failures during a run

@pytest.mark.parametrize("exc", [FloatingPointError("numerical failure\nsecond line"),
                                 ValueError("found late"), OSError("disk full")])
def test_failure_during_a_run_exits_1_in_one_line(exc, tmp_path, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise exc
    monkeypatch.setattr(e1_rates, "run_sweep", fail)
    argv = TINY_RATES + ["--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")]
    status, _, err = run(argv, capsys)
    line = one_error(err, f"error: rates failed: {type(exc).__name__}: ")
    assert status == 1 and "second line" not in line
    monkeypatch.setenv(cli.DEBUG_ENV, "1")                    # developers: the exception itself
    with pytest.raises(type(exc)):
        cli.main(argv)
    monkeypatch.delenv(cli.DEBUG_ENV)
    with pytest.raises(type(exc)):
        cli.main(["--debug"] + argv)


def test_interrupt_says_the_run_resumes(tmp_path, capsys, monkeypatch):
    def stop(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(e1_rates, "run_sweep", stop)
    status, _, err = run(TINY_RATES + ["--out", str(tmp_path / "o"), "--cache-dir",
                                       str(tmp_path / "c")], capsys)
    assert status == 130 and "resumes" in one_error(err)


# ------------------------------------------------------------------ help and examples

def test_every_command_help_ends_with_an_example(tmp_path, capsys, no_run):
    parsers = cli.sub_parsers(cli.build_parser())
    assert set(parsers) == {"rates", "profile", "attention-profile", "attention-fit",
                            "teacher-student", "transformer"}
    for name, parser in parsers.items():
        status, out, _ = run([name, "--help"], capsys)
        assert status == 0
        tail = out.strip().splitlines()[-2:]
        assert tail[0] == "example:" and tail[1].strip().startswith(f"python -m gated_hmoe {name} "), tail
        (example,) = cli.examples(parser)
        assert example[0] == name
        # the example is a valid command: it parses and passes every check before the run
        args = cli.build_parser().parse_args(example + ["--out", str(tmp_path / name),
                                                        "--cache-dir", str(tmp_path / "c")])
        cli.prepare(args)


def test_the_documented_rates_example_runs(tmp_path, capsys):
    (example,) = cli.examples(cli.sub_parsers(cli.build_parser())["rates"])
    argv = example + ["--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"),
                      "--no-progress"]
    status, out, err = run(argv, capsys)
    assert status == 0, err
    assert json.loads((tmp_path / "o" / "results.json").read_text())["slopes"]["d1"] is not None


# ------------------------------------------------------------------ the real process

def _python_m(args, tmp_path, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
           "GATED_HMOE_CACHE": str(tmp_path / "cache"), **(env_extra or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)


def test_python_m_exit_status_and_one_error_line(tmp_path):
    (tmp_path / "file").write_text("")
    for argv in (["rates", "--replicates", "100000000", "--out", "o"],
                 ["rates", "--n-min", "5000", "--n-max", "100", "--out", "o"],
                 ["profile", "--out", "file/o"]):
        proc = _python_m(["-m", "gated_hmoe", *argv], tmp_path)
        err = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (argv, proc.stderr)
        assert len(err) == 1 and err[0].startswith("error: --"), (argv, err)
        assert "Traceback" not in proc.stderr and proc.stdout == ""
    # a failure during the run: status 1, one line
    code = ("import sys; from gated_hmoe import cli; from gated_hmoe.experiments import e1_rates\n"
            "def fail(*a, **k): raise RuntimeError('numerical failure')\n"
            "e1_rates.run_sweep = fail\nsys.exit(cli.main(sys.argv[1:]))")
    proc = _python_m(["-c", code, *TINY_RATES, "--out", "o"], tmp_path)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert err[0].startswith("error: rates failed: RuntimeError: numerical failure")


# ------------------------------------------------------------------ teacher-student

TINY_TS = ["teacher-student", "--position", "G1", "--heads", "3", "--n-min", "50", "--n-max",
           "100", "--points", "2", "--seeds", "1", "--inits", "1", "--steps", "20",
           "--no-progress"]


def test_teacher_student_writes_results_and_a_figure(tmp_path, capsys):
    status, out, err = run(TINY_TS + ["--out", str(tmp_path / "o"), "--cache-dir",
                                      str(tmp_path / "c")], capsys)
    assert status == 0, err
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["grid"] == [50, 100] and set(res["slopes"]) == {"head_loss", "excess_risk"}
    assert (tmp_path / "o" / "teacher_student.png").stat().st_size > 0
    assert "runs at the step budget" in out


@pytest.mark.parametrize("bad, flag", [(["--position", "G7"], "--position"),
                                       (["--seeds", "0"], "--seeds"),
                                       (["--teacher-seed", "1", "--teacher", "x.json"], "--teacher"),
                                       (["--seeds", "100000000"], "--seeds")])
def test_teacher_student_bad_flags_are_one_line(tmp_path, capsys, no_run, bad, flag):
    status, _, err = run(TINY_TS + bad + ["--out", str(tmp_path / "o")], capsys)
    assert status == 2 and one_error(err, f"error: {flag}"), err
