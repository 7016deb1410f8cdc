"""The hub's database: one data layer (:mod:`.database`) over SQLite and PostgreSQL
(:mod:`.engines`), its versioned schema (:mod:`.schema`), telemetry downsampling
(:mod:`.downsample`) and the thread every database call of the service runs on, with a deadline
(:mod:`.dbthread`)."""
