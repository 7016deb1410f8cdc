"""A rollout's gates on behaviour: its ``--criterion`` options read by one parser
(:mod:`.criteria`), in the words every kind shares (:mod:`.criterion_text`); criteria on the groups'
health measures (:mod:`.health`, with the Mann-Whitney U test of :mod:`.mann_whitney`) and on the
canaries' shadow (:mod:`.shadow`, with the Wilcoxon signed-rank test of :mod:`.wilcoxon`). Pure:
no database, no clock."""
