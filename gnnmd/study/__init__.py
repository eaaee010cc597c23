"""The reference study as data (scales, protocols, training configs), its resumable run and its report."""
