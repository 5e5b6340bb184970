"""Test dummies built from production code: synthetic audio and broken files, tiny models, PANNs-layout checkpoints, labelled datasets, clustered unit vectors."""
