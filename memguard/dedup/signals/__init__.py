"""Duplicate signals: caption normalisation, MinHash and LSH, image and caption embeddings, faiss neighbours."""
