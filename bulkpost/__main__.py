"""Entry point for ``python -m bulkpost``."""

from bulkpost.cli import main

if __name__ == "__main__":
    main()
