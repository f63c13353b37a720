def test_it_smoke(run):
    r = run("python", "print(1)")
    assert r.stdout == "1\n"
