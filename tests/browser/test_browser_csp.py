"""The dashboard under its Content-Security-Policy in Chromium: every page loads and runs its
scripts with nothing blocked, while an injected inline script is refused (the policy is live)."""

from __future__ import annotations

from ganforge.api.openapi import build_spec


def test_pages_run_under_the_policy_and_inline_scripts_are_refused(page, service):
    for path, ready in (("/", "#jobs-body"), ("/sweeps", "#sweeps-body"), ("/submit", "#preset"), ("/docs/plain", "h1"),
                        ("/docs", "#operations-jobs-submitJob, .opblock")):
        response = page.goto(f"{service}{path}")
        assert "script-src 'self'" in response.headers["content-security-policy"], path
        assert response.headers["x-frame-options"] == "DENY"
        page.wait_for_selector(ready, state="attached")
    # Swagger UI rendered every operation of the description from /openapi.json.
    operations = page.evaluate("document.querySelectorAll('.opblock').length")
    assert operations == sum(len(methods) for methods in build_spec()["paths"].values())
    page.goto(f"{service}/docs/plain")
    # The plain page's style sheet applied (it was an inline <style> before the policy).
    assert page.evaluate("getComputedStyle(document.body).maxWidth") != "none"

    page.goto(f"{service}/submit")
    page.wait_for_selector("#preset option[value='ring8']", state="attached")  # submit.js ran
    page.evaluate("""() => { const s = document.createElement('script');
                             s.textContent = 'window.cspProbe = 1';
                             document.body.appendChild(s); }""")
    page.wait_for_function("() => true")
    assert page.evaluate("window.cspProbe") is None
    assert any("inline script" in m for m in page.csp_violations), page.csp_violations
    page.csp_violations.clear()  # the one refusal this test caused (the fixture fails on any other)
    assert page.js_errors == []
