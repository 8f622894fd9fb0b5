"""Barycenter Account: the account-security web application."""
