"""The closing box of every chapter (compare.verdict): planted claims against text written by hand."""
from dataclasses import replace

from helpers.config import load_profile
from helpers.paper.compare import Claim, verdict


def test_verdict_demo_text_written_by_hand():
    claims = [Claim("Figure 1a", "every robust zero-shot CLIP model has a positive effective robustness", 1, 2, "16 of 16"),
              Claim("Figure 7", "the largest drop is at the last layer", 1, 1, "stated (Appendix C)"),
              Claim("Table 5", "finetuning lowers CoCa's unique concepts (per pair)", 0, 0, "2 of 2")]
    expected = """```{admonition} What this run shows
:class: tip verdict

- **Figure 1a.** The paper finds that every robust zero-shot CLIP model has a positive effective robustness: 16 of 16 on its printed values. This run: it holds in 1 of 2 cases.
- **Figure 7.** The paper finds that the largest drop is at the last layer: stated (Appendix C). This run: it holds in 1 of 1 case.
- **Table 5.** The paper finds that finetuning lowers CoCa's unique concepts (per pair): 2 of 2 on its printed values. This run: no case to check it on in this slice.

These counts come from the `demo` profile's untrained stand-in models: they show that the pipeline runs end to end and counts each claim, not whether the claim holds for CLIP.
```"""
    assert verdict(claims, load_profile("demo")) == expected


def test_verdict_paper_profile_names_its_pool_and_no_claims_says_so():
    paper = load_profile("paper")
    text = verdict([], paper)
    assert "This chapter checks no countable claim of the paper." in text
    assert text.endswith(f"the `paper` profile's {len(paper.pool)} models; a claim that holds in fewer cases than the "
                         "paper's count is a disagreement worth reading the chapter's figures for.\n```")
    assert "stand-in" not in text
    smoke = replace(paper, name="tiny", kind="smoke")
    assert "the `tiny` smoke profile (a few images per dataset)" in verdict([], smoke)
