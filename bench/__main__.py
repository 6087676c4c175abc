"""`python -m bench [NAME…] [--scale S] [--list]`: every benchmark registered under bench/ (`make bench`)."""
from bench.stats import main

main()
