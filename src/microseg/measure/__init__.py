"""Measurement: attribution of conversions to channels and journey stages of segments."""
