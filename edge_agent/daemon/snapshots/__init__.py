"""The daemon's state in snapshots: the file format (:mod:`.format`), the directory of snapshots
and its write budget (:mod:`.store`), and every group's state saved into one snapshot and
restored from the last good one at start (:mod:`.groups`)."""
