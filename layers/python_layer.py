"""type: "Python": a user's class, imported as Caffe imports it, runs as a layer."""
