"""clews-pipe: extract, train and evaluate CLEWS musical version matching models at cluster scale."""

__version__ = "0.1.0"
