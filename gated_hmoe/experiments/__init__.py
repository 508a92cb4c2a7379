"""The book's experiments E1-E4 as configurations, cached and resumable (one runner):
numbers and tables, no figures."""
