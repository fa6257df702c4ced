"""Build data/concepts/concepts.tsv: a frequency-ranked concept list for PaCE, offline and reproducible.

PaCE (arXiv 2406.04331) uses a frequency-ranked English word list ("said, time, made, years ...").
We take the most frequent English words from the ``wordfreq`` package (Speer et al.; word list data
CC-BY-SA 4.0), keep alphabetic words of 3+ letters that are not function words, then add the concepts
the shipped tasks need (toxicity and insults, sentiment, emotions, hedging, falsehood) where missing,
tagged with their group. ``wordfreq`` is needed only to rebuild the list, not by steerlens itself.

    pip install wordfreq==3.1.1 && python tools/build_concept_list.py [--top 3000] [--more 7000]

``--more N`` also writes data/concepts/more_concepts.txt: the next N words by the same rule, not in the list,
for PaCE's dictionary-size benchmark (``benchmarks/pace_detox.py``, frames stimuli).
"""

from __future__ import annotations

import argparse
from pathlib import Path

FUNCTION_WORDS = set("""
the and for that you with are can from was not this have your their they will which more other has about
but one were also them who into these its some how when his our what there been all would her she him out
than any only may most such after first then those each many where both while through over between should
could very just being under does did own same during because before why here well however those whose
upon every another without within among whether since until although though yet nor off too via per
""".split())

MAX_EXTENSIONS = 60
# Fragments that slip through both checks (seen in the first 3,000), dropped by hand.
NOT_CONCEPTS = {"diff", "writ", "ult", "ser", "rel", "inst", "mon", "stat", "gen", "vis"}

TASK_CONCEPTS = {
    "toxicity": "idiot moron stupid dumb fool loser jerk bastard scum garbage trash pathetic worthless useless "
                "hate disgusting shut damn crap insult insulting abuse abusive harass harassment threat threaten "
                "kill violence violent rude offensive obscene vulgar profanity slur hostile nasty cruel mean bully "
                "bullying humiliate degrade curse swear racist sexist hateful contempt ugly filthy",
    "negative_sentiment": "sad miserable awful terrible horrible bad worst disappointing boring depressing gloomy "
                          "dreadful annoying painful unpleasant bleak dull grim tragic failure problem complaint "
                          "regret lonely hopeless broken",
    "positive_sentiment": "happy wonderful great excellent delightful joyful pleasant lovely amazing beautiful "
                          "cheerful fantastic brilliant kind warm grateful hopeful success enjoy love peaceful "
                          "calm bright friendly",
    "emotion": "anger fear joy sadness disgust surprise trust anxiety shame guilt pride envy jealousy excitement "
               "grief relief frustration gratitude boredom embarrassment",
    "hedging": "maybe perhaps possibly probably likely unlikely uncertain uncertainty doubt assume suppose seems "
               "apparently reportedly allegedly might roughly approximately",
    "falsehood": "lie liar false falsehood myth misconception rumor hoax fake deception deceive mislead "
                 "misinformation fabricate fiction untrue superstition conspiracy exaggerate",
}


def main() -> None:
    from wordfreq import top_n_list

    ap = argparse.ArgumentParser()
    ap.add_argument("--top", type=int, default=3000)
    ap.add_argument("--more", type=int, default=0)
    args = ap.parse_args()
    ranked = [w for w in top_n_list("en", 20 * (args.top + args.more))
             if w.isascii() and w.isalpha() and len(w) >= 3 and w not in FUNCTION_WORDS | NOT_CONCEPTS]
    concepts: dict[str, str] = {w: "frequency" for w in ranked[:args.top]}
    for group, words in TASK_CONCEPTS.items():
        for word in words.split():
            concepts[word] = f"{concepts[word]},task:{group}" if word in concepts else f"task:{group}"
    out = Path(__file__).resolve().parents[1] / "data" / "concepts" / "concepts.tsv"
    with out.open("w", encoding="utf-8") as f:
        f.write("rank\tconcept\tsource\n")
        for rank, (word, source) in enumerate(concepts.items()):
            f.write(f"{rank}\t{word}\t{source}\n")
    print(f"wrote {len(concepts)} concepts to {out}")
    if args.more:
        more = [w for w in ranked[args.top:] if w not in concepts][:args.more]
        (out.parent / "more_concepts.txt").write_text("".join(f"{w}\n" for w in more))
        print(f"wrote {len(more)} more concepts to {out.parent / 'more_concepts.txt'}")


if __name__ == "__main__":
    main()
