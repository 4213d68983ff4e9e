"""Reports: HTML pages, tables printed at a job's end, and statistics over seeds.

html.py (self-contained HTML with embedded figures), audit_report.py, demo_report.py and thought_mdp_report.py
(one report per command that writes one), tables.py (rich tables), stats.py (medians, quartiles, paired
bootstrap intervals over seeds).
"""
