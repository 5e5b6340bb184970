"""earshot past one machine (pip install 'earshot[ray]'): index recordings from folders or S3
on a Ray cluster into Parquet shards (`indexer`), search the shards from FAISS indexes held by
Ray actors (`search`), or merge them into a normal catalogue (`merge`). `shards` is the format,
`storage` the folders and buckets."""
