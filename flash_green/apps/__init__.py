"""Demo applications used by the tests, the comparisons and the README."""
