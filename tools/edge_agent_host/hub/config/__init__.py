"""The hub service's configuration: ``hub.toml`` (:mod:`.hub_toml`) and ``rollout start``'s
options (:mod:`.rollout_options`), which the file's ``[learning] rollout`` repeats as words."""
