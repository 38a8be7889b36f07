"""Re-run the extraction attack on a trained model and measure memorization."""
