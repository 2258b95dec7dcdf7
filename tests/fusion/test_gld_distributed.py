"""graph="batch" across data-parallel ranks: two CPU processes on gloo equal one process."""

from __future__ import annotations

import socket
import sys
import textwrap

import pytest
import torch

import fusion
from fusion import TopK

WORLD = 2

# The worker lives in its own module file so that spawned children can import it
# (pytest's importlib mode does not make test modules importable by name).
WORKER = textwrap.dedent(
    """
    import torch
    import torch.distributed as dist

    import fusion


    def main(rank, world, port, data_path, out_dir):
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
        )
        try:
            data = torch.load(data_path)
            half = slice(rank * data["per_rank"], (rank + 1) * data["per_rank"])
            results = []
            for case in data["cases"]:
                s = data["student"][half].clone().requires_grad_()
                teacher = case["teacher"]
                if isinstance(teacher, dict):  # a cached TopK, stored as plain tensors
                    teacher = fusion.TopK(*(x[half] for x in teacher["topk"]))
                else:
                    teacher = teacher[half]
                loss = fusion.gld_loss(
                    s, teacher, data["student_mask"][half], data["teacher_mask"][half],
                    graph="batch", **case["opts"],
                )
                loss.backward()
                results.append((loss.detach(), s.grad))
            torch.save(results, f"{out_dir}/rank{rank}.pt")
        finally:
            dist.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(0)
    B, Ts, Tt, Vs, Vt = 4, 6, 7, 15, 19
    student = torch.randn(B, Ts, Vs, dtype=torch.float64, generator=g) * 2
    teacher = torch.randn(B, Tt, Vt, dtype=torch.float64, generator=g) * 2
    teacher[:2, :, -5:] = -40.0  # rank 0's cached ids stop earlier: vocab widths differ
    s_mask = torch.rand(B, Ts, generator=g) < 0.7
    t_mask = torch.rand(B, Tt, generator=g) < 0.7
    s_mask[:, 0] = t_mask[:, 0] = True
    s_mask[1] = False  # a fully masked sequence on rank 0
    lp = torch.log_softmax(teacher, -1).topk(6)
    cases = [
        {"teacher": teacher, "opts": {"k": 4, "m": 9}},
        {"teacher": teacher, "opts": {"k": 3, "m": 5, "nodes": "rank"}},
        {"teacher": {"topk": (lp.values, lp.indices)}, "opts": {"k": 4, "m": 30}},
    ]
    return {
        "student": student,
        "student_mask": s_mask,
        "teacher_mask": t_mask,
        "cases": cases,
        "per_rank": B // WORLD,
    }


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_on_the_whole_batch(tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    (tmp_path / "_gld_dist_worker.py").write_text(WORKER)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("_gld_dist_worker", None)
    import _gld_dist_worker

    data = _data()
    torch.save(data, tmp_path / "data.pt")
    args = (WORLD, _free_port(), str(tmp_path / "data.pt"), str(tmp_path))
    mp.spawn(_gld_dist_worker.main, args=args, nprocs=WORLD, join=True)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    for c, case in enumerate(data["cases"]):
        s = data["student"].clone().requires_grad_()
        teacher = case["teacher"]
        teacher = TopK(*teacher["topk"]) if isinstance(teacher, dict) else teacher
        loss = fusion.gld_loss(
            s,
            teacher,
            data["student_mask"],
            data["teacher_mask"],
            graph="batch",
            **case["opts"],
        )
        loss.backward()
        for r in range(WORLD):
            rank_loss, rank_grad = per_rank[r][c]
            torch.testing.assert_close(rank_loss, loss.detach(), rtol=1e-12, atol=1e-14)
            half = slice(r * data["per_rank"], (r + 1) * data["per_rank"])
            # DDP averages gradients over ranks: each rank holds world x its share
            torch.testing.assert_close(rank_grad / WORLD, s.grad[half], rtol=1e-10, atol=1e-14)
        assert torch.all(per_rank[0][c][1][1] == 0)  # the fully masked sequence
    assert not torch.equal(per_rank[0][0][0], per_rank[0][1][0])  # the cases differ
