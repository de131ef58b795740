"""The feature log: every vector on ``<domain>.features``, as parquet in the Feast offline store.

The scorer serves from the vectors the featurizer publishes; training from the same vectors,
read back point-in-time by Feast, is what makes training and serving see identical features.
"""
