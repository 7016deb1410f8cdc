"""The hub's database: one data layer (:mod:`.database`) over SQLite and PostgreSQL
(:mod:`.engines`), the writer of each message kind (:mod:`.writers`), the one rule of the
telemetry and health histories (:mod:`.series`) applied with the other ``[retention]`` bounds
(:mod:`.retention`, :mod:`.downsample`), its versioned schema (:mod:`.schema`), and the thread
every database call of the service runs on, with a deadline (:mod:`.dbthread`)."""
