"""Response rules: what a bin's capture URL answers.

``validate`` checks a bin's ``responses`` setting, ``match`` picks the rule a request matches,
``plan`` decides and renders the answer, ``templates`` checks and renders answer templates in the
``sandbox``; ``limits`` holds the bounds they share, ``form`` the settings-form fields and
``hits`` the shared "fail the first N" counters.
"""
