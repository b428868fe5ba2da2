"""What the user verbs of the `ckpt` command do, apart from parsing the command line."""
