"""Prints the measured parity errors after the export tests."""


def pytest_terminal_summary(terminalreporter):
    from tests.export.common import MEASURED

    if not MEASURED:
        return
    terminalreporter.section("export parity: max errors (fp32, CPU)")
    terminalreporter.write_line(f"{'case':44s} {'logits rel':>11s} {'loss abs':>10s} "
                                f"{'grad rel':>10s}")
    for name, e in sorted(MEASURED.items()):
        terminalreporter.write_line(f"{name:44s} {e['logits_rel']:11.2e} {e['loss_abs']:10.2e} "
                                    f"{e['grad_rel']:10.2e}")
