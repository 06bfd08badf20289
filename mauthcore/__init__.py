"""mauth's shared core: what musersd, mauthserver and mauthctl all speak.

Rules and their keys (`rules`), the rule file (`rulefile`), addresses
(`hostport`), secrets files (`secretfile`), the router protocol's codecs,
keys and cores (`protocol`), the mediator's event kinds (`events`) and the
constants the programs share (`constants`). The core imports nothing from the
programs' packages, and the programs import nothing from one another.
"""
