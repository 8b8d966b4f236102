"""CRM data shared by scoring and forecasting: contracts, stage configuration, loaders, the synthetic CRM."""
