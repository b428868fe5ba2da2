"""Where archives live and what they are: the archive format, object access, encryption."""
