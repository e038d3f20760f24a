"""Git links: a function follows a branch of a repository, and a signed push webhook builds it."""
