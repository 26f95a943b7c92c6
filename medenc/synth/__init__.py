"""``medenc synth``: synthetic 5-class brain-tumor MRI studies on real MNI152 anatomy."""
