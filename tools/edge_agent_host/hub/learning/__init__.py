"""Fleet learning on the hub: the checks a node's delta passes (:mod:`.checks`), the learning
tables (:mod:`.store`), the merge (:mod:`.merge`), a bundle's model and the one a round makes
(:mod:`.model`), a round (:mod:`.round`), the rounds the service runs by itself (:mod:`.policy`),
and the nodes brought up to their line's version (:mod:`.catch_up`, :mod:`.catch_up_store`)."""
