"""Export a trained curriculum checkpoint to an on-device bundle (ships as `bua.export`)."""
