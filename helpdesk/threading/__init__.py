"""Which ticket a mail belongs to: references, signed tokens, thread resolution.

Import as ``helpdesk.threading``; never run files here as scripts, the folder
name would shadow the standard library's ``threading``.
"""
