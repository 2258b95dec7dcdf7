"""A cached teacher with another tokenizer, moved onto a student's tokens (fusion.tokenalign)."""

from __future__ import annotations

import numpy as np
import torch

from fusion import jsd_loss
from fusion.cache import TeacherCache, build
from fusion.tiny import bpe_tokenizer
from fusion.tokenalign import align_tokens, map_vocab, project_topk, token_strings


def test_cached_rows_projected_onto_a_bpe_student(tiny, helpers, tmp_path):
    out = build(tiny.model, tiny.tok, tiny.data, tmp_path / "c", k=4, batch_size=3, progress=False)
    cache = TeacherCache(tmp_path / "c")
    assert out is not None
    student = bpe_tokenizer(helpers.corpus_of(tiny.rows), vocab_size=300)
    teacher_vocab = token_strings(tiny.tok, range(len(tiny.tok)))
    student_vocab = token_strings(student, range(len(student)))
    checked = 0
    for i, row in enumerate(tiny.rows):
        if not row["response"] or not row["prompt"]:  # no row for a first token
            continue
        teacher_ids = cache.token_ids(i).tolist()  # the response's characters, then EOS
        student_ids = student(row["response"], add_special_tokens=False)["input_ids"]
        student_ids.append(student.eos_token_id)
        t_tok, s_tok = token_strings(tiny.tok, teacher_ids), token_strings(student, student_ids)
        assert "".join(t_tok) == "".join(s_tok)  # the same text, cut differently
        alignment = align_tokens(t_tok, s_tok)
        rows = cache[i]
        id_map = map_vocab(teacher_vocab, student_vocab, ids=rows.indices.unique().tolist())
        moved, mask = project_topk(rows, alignment, id_map, len(student_ids))
        chosen = alignment.source_for_target()
        assert mask[0, 0] and mask[0, -1]  # the first token and EOS start together
        assert chosen[-1] == len(teacher_ids) - 1
        for j in np.nonzero(mask[0])[0]:  # each row is its teacher row, mapped and merged
            expected = torch.zeros(len(student), dtype=torch.float64)
            expected.index_add_(
                0, torch.as_tensor(id_map)[rows.indices[chosen[j]].long()],
                rows.logprobs[chosen[j]].double().exp(),
            )  # fmt: skip
            got = torch.zeros(len(student), dtype=torch.float64)
            got.index_add_(0, moved.indices[0, j].long(), moved.logprobs[0, j].double().exp())
            torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-6)
        logits = torch.randn(1, len(student_ids), len(student), requires_grad=True)
        loss = jsd_loss(logits, moved, beta=0.5, mask=torch.as_tensor(mask))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
        checked += 1
    assert checked >= 5
