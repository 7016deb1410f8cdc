"""What the Active Inference conversion's parts share with the neural formats that pair an
observation model with a generative model: its options, reading models, measuring int8 against
float64, and the bundle payload."""
