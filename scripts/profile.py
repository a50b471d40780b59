"""``keras-effnet-profile`` in a checkout: the command is keras_effnet.commands.profile
(``--help`` prints its documentation)."""

from keras_effnet.commands.profile import run

if __name__ == "__main__":
    run()
