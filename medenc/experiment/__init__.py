"""The paper's experiment as library functions: prepare, train, encrypt a data set, evaluate, report."""
